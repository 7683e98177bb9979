"""tools/install/uv_args.py: `make setup` installs with uv, which reads no pip configuration; a
user behind a mirror or a proxy configures pip, and uv must install from the same places."""
import os
import re
import sys

from helpers import REPO, load_file, run_tool

RELATIVE = 'tools/install/uv_args.py'
TOOL = os.path.join(REPO, RELATIVE)


def load():
    return load_file(RELATIVE, 'uv_args')


def config_list(**sections):
    """`pip config list` lines, e.g. config_list(glob={'index-url': 'X'}, env={...})."""
    names = {'glob': 'global', 'install': 'install', 'env': ':env:'}
    return ''.join(f'{names[s]}.{k}={v!r}\n' for s, values in sections.items()
                   for k, v in values.items())


def test_later_sections_win_as_in_pip(tmp_path):
    uv_args = load()
    g, i = tmp_path / 'g', tmp_path / 'i'
    g.mkdir(), i.mkdir()
    conf = uv_args.settings(config_list(
        glob={'index-url': 'http://global.example/simple', 'find-links': str(g),
              'timeout': '15', 'proxy': 'http://proxy.example:3128'},
        install={'index-url': 'http://install.example/simple', 'find-links': str(i)},
        env={'index-url': 'http://env.example/simple', 'default-timeout': '180'}))
    assert uv_args.uv_options(conf) == [
        '--index-strategy', 'unsafe-best-match', '--default-index', 'http://env.example/simple',
        '--find-links', str(i), '--system-certs']
    # PIP_DEFAULT_TIMEOUT is pip's --timeout under its other name, and beats the file's
    assert uv_args.uv_variables(conf) == [
        'HTTPS_PROXY=http://proxy.example:3128', 'HTTP_PROXY=http://proxy.example:3128',
        'UV_HTTP_TIMEOUT=180']


def test_lists_no_index_certificates_and_a_missing_folder(tmp_path, capsys):
    uv_args = load()
    wheels = tmp_path / 'wheels'
    wheels.mkdir()
    conf = uv_args.settings(config_list(
        glob={'extra-index-url': 'http://one.example/simple\nhttp://two.example/simple',
              'find-links': f'{wheels} {tmp_path}/gone https://host.example/wheels/',
              'trusted-host': 'one.example two.example', 'constraint': '/etc/caps.txt',
              'cert': '/certs/ca.pem', 'client-cert': '/certs/me.pem', 'retries': '9'},
        env={'no-index': 'yes'}))
    assert uv_args.uv_options(conf) == [
        '--index-strategy', 'unsafe-best-match',
        '--index', 'http://one.example/simple', '--index', 'http://two.example/simple',
        '--find-links', str(wheels), '--find-links', 'https://host.example/wheels/',
        '--constraints', '/etc/caps.txt',
        '--allow-insecure-host', 'one.example', '--allow-insecure-host', 'two.example',
        '--no-index']
    assert f'find-links {tmp_path}/gone is not a folder' in capsys.readouterr().err
    assert uv_args.uv_variables(conf) == [
        'SSL_CERT_FILE=/certs/ca.pem', 'SSL_CLIENT_CERT=/certs/me.pem', 'UV_HTTP_RETRIES=9']


def test_the_tool_reads_pips_own_configuration(tmp_path):
    """End to end through `pip config list`, with no pip.conf file read (PIP_CONFIG_FILE set to
    the null device) and only these PIP_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('PIP_')}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL='http://env.example/simple',
               PIP_EXTRA_INDEX_URL='http://a.example/simple http://b.example/simple',
               PIP_CERT='/certs/ca.pem', PIP_NO_INDEX='false')
    r = run_tool(sys.executable, TOOL, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith('\0')
    assert r.stdout[:-1].split('\0') == [
        'SSL_CERT_FILE=/certs/ca.pem', '--', '--index-strategy', 'unsafe-best-match',
        '--default-index', 'http://env.example/simple',
        '--index', 'http://a.example/simple', '--index', 'http://b.example/simple']


def test_uv_has_every_option_the_tool_gives():
    uv = os.path.join(os.path.dirname(sys.executable), 'uv')
    r = run_tool(uv, 'pip', 'install', '--help')
    assert r.returncode == 0, r.stderr
    for option in [*load().LIST_OPTIONS.values(), '--index-strategy', '--no-index',
                   '--system-certs']:
        assert re.search(rf'^\s+(-\w, )?{option}( |$)', r.stdout, re.M), option
