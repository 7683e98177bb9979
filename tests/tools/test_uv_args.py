"""tools/install/uv_args.py: `make setup` installs with uv, which reads no pip configuration; a
user behind a mirror configures pip, and uv must install from the same places."""
import os
import sys

from helpers import REPO, run_tool

TOOL = os.path.join(REPO, 'tools', 'install', 'uv_args.py')


def uv_args(tmp_path, pip_conf, **pip_env):
    """The tool's output with only this pip.conf and these PIP_* variables (no user config)."""
    conf = tmp_path / 'pip.conf'
    conf.write_text(pip_conf)
    env = {k: v for k, v in os.environ.items() if not k.startswith('PIP_')}
    env.update(HOME=str(tmp_path / 'home'), XDG_CONFIG_HOME=str(tmp_path / 'home'),
               XDG_CONFIG_DIRS=str(tmp_path / 'etc'), PIP_CONFIG_FILE=str(conf),
               PIP_CERT='/certs/ca.pem')
    env.update(pip_env)
    r = run_tool(sys.executable, TOOL, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith('\0')
    cert, *args = r.stdout[:-1].split('\0')
    return cert, args


def test_pip_settings_become_uv_options_in_pips_precedence(tmp_path):
    cert, args = uv_args(
        tmp_path,
        '[global]\nindex-url = http://file.example/simple\ntrusted-host = file.example\n'
        'extra-index-url = http://one.example/simple http://two.example/simple\n'
        '[install]\nfind-links =\n    /wheels/a\n    /wheels/b\nconstraint = /etc/caps.txt\n',
        PIP_INDEX_URL='http://env.example/simple')
    assert cert == '/certs/ca.pem'
    assert args == ['--index-strategy', 'unsafe-best-match',
                    '--index-url', 'http://env.example/simple',  # the variable beats the file
                    '--extra-index-url', 'http://one.example/simple',
                    '--extra-index-url', 'http://two.example/simple',
                    '--find-links', '/wheels/a', '--find-links', '/wheels/b',
                    '--constraint', '/etc/caps.txt',
                    '--allow-insecure-host', 'file.example']


def test_no_index_and_an_emptied_setting(tmp_path):
    cert, args = uv_args(tmp_path, '[install]\nfind-links = /wheels\n', PIP_NO_INDEX='true',
                         PIP_FIND_LINKS='', PIP_CERT='')
    assert cert == '' and args == ['--index-strategy', 'unsafe-best-match', '--no-index']
