"""The uv options that install from where pip would: uv reads no pip configuration, so the index,
find-links, constraint and trusted-host settings of `pip config list` (pip.conf files and PIP_*
variables) become uv options. Run by setup_env.sh with the environment's python; prints pip's
certificate file (empty when none) and then the options, each ending in a NUL byte.
"""
import ast
import subprocess
import sys

# pip's setting -> uv's option; each takes a space-separated list
LIST_OPTIONS = {'index-url': '--index-url', 'extra-index-url': '--extra-index-url',
                'find-links': '--find-links', 'constraint': '--constraint',
                'trusted-host': '--allow-insecure-host'}
# pip's own precedence for `pip install`: the later section wins
SECTIONS = ('global', 'install', ':env:')


def settings(config_list: str) -> dict:
    """`pip config list` output (``section.name='value'`` lines) -> the values `pip install` uses."""
    found = {}
    for line in config_list.splitlines():
        key, _, value = line.partition('=')
        section, _, name = key.rpartition('.')
        found.setdefault(section, {})[name] = ast.literal_eval(value)
    merged = {}
    for section in SECTIONS:
        merged.update(found.get(section, {}))
    return merged


def uv_options(conf: dict) -> list:
    args = ['--index-strategy', 'unsafe-best-match']  # pip takes the best match over all indexes
    for name, option in LIST_OPTIONS.items():
        for value in conf.get(name, '').split():
            args += [option, value]
    if conf.get('no-index', '').lower() in ('1', 'true', 'yes', 'on'):
        args.append('--no-index')
    return args


def main() -> None:
    out = subprocess.run([sys.executable, '-m', 'pip', 'config', 'list'], capture_output=True,
                         text=True, check=True).stdout
    conf = settings(out)
    sys.stdout.write(''.join(a + '\0' for a in [conf.get('cert', '')] + uv_options(conf)))


if __name__ == '__main__':
    main()
