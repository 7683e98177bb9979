"""How uv installs from where, and as, pip would: uv reads no pip configuration, so the settings of
`pip config list` (pip.conf files and PIP_* variables) that say where packages come from and how
to reach them become uv options and environment variables. Run by setup_env.sh with the
environment's python; prints ``NAME=value`` assignments, then ``--``, then the options, each
ending in a NUL byte.
"""
import ast
import os
import subprocess
import sys

# pip's setting -> uv's option; each takes a space-separated list
LIST_OPTIONS = {'index-url': '--default-index', 'extra-index-url': '--index',
                'find-links': '--find-links', 'constraint': '--constraints',
                'trusted-host': '--allow-insecure-host'}
# pip's setting -> the variable uv reads for it
VARIABLES = {'cert': ('SSL_CERT_FILE',), 'client-cert': ('SSL_CLIENT_CERT',),
             'proxy': ('HTTPS_PROXY', 'HTTP_PROXY'), 'timeout': ('UV_HTTP_TIMEOUT',),
             'retries': ('UV_HTTP_RETRIES',)}
# pip's own precedence for `pip install`: the later section wins
SECTIONS = ('global', 'install', ':env:')
TRUE = ('y', 'yes', 't', 'true', 'on', '1')  # pip's strtobool


def settings(config_list: str) -> dict:
    """`pip config list` output (``section.name='value'`` lines) -> the values `pip install` uses."""
    found = {}
    for line in config_list.splitlines():
        key, _, value = line.partition('=')
        section, _, name = key.rpartition('.')
        name = {'default-timeout': 'timeout'}.get(name, name)  # two names of one pip option
        found.setdefault(section, {})[name] = ast.literal_eval(value)
    merged = {}
    for section in SECTIONS:
        merged.update(found.get(section, {}))
    return merged


def uv_options(conf: dict) -> list:
    args = ['--index-strategy', 'unsafe-best-match']  # pip takes the best match over all indexes
    for name, option in LIST_OPTIONS.items():
        for value in conf.get(name, '').split():
            if name == 'find-links' and '://' not in value and not os.path.isdir(value):
                # pip skips a missing folder with a warning; uv would stop
                print(f'setup: find-links {value} is not a folder; skipped, as pip skips it',
                      file=sys.stderr)
                continue
            args += [option, value]
    if conf.get('no-index', '').lower() in TRUE:
        args.append('--no-index')
    if not conf.get('cert'):  # pip then trusts the system's certificate store too
        args.append('--system-certs')
    return args


def uv_variables(conf: dict) -> list:
    return [f'{var}={conf[name]}' for name, names in VARIABLES.items() if conf.get(name)
            for var in names]


def main() -> None:
    out = subprocess.run([sys.executable, '-m', 'pip', 'config', 'list'], capture_output=True,
                         text=True, check=True).stdout
    conf = settings(out)
    sys.stdout.write(''.join(a + '\0' for a in uv_variables(conf) + ['--'] + uv_options(conf)))


if __name__ == '__main__':
    main()
