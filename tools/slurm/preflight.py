"""The checks of tools/slurm/submit_pipeline.sh in one Python start (the imports take seconds,
more on a network filesystem): that this Python imports torch, mmengine, mmdet and mmpretrain
(it prints `imports ok`, or the failures and exit status 1), then each tool given, run as
`python TOOL ARGS` runs it, one after the other until one fails:

    preflight.py OUT_DIR N TOOL [ARGS] [N TOOL [ARGS] ...]

N counts the words TOOL [ARGS] of the next tool. The Kth tool (from 1) writes its stdout and
stderr to OUT_DIR/K.out and its exit status to OUT_DIR/K.status; exit status 0 when every
tool returned 0, else 1.
"""
import os
import runpy
import sys
import traceback


def check_imports() -> bool:
    bad = []
    for m in ('torch', 'mmengine', 'mmdet', 'mmpretrain'):
        try:
            __import__(m)
        except Exception as e:
            bad.append(f'{m}: {type(e).__name__}: {(str(e).splitlines() or [""])[0]}')
    print('; '.join(bad) if bad else 'imports ok', flush=True)
    return not bad


def commands(words):
    while words:
        n = int(words[0])
        yield words[1:1 + n]
        words = words[1 + n:]


def run_tool(argv, out_path) -> int:
    """``python argv[0] argv[1:]`` in this process, its output (file descriptors 1 and 2, so
    that of its child processes too) in out_path."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(out_path, 'wb') as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
    sys.argv = list(argv)
    path = sys.path[:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))  # as `python SCRIPT` does
    try:
        runpy.run_path(argv[0], run_name='__main__')
        status = 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            status = e.code or 0
        else:  # sys.exit('message'): printed, status 1
            print(e.code, file=sys.stderr)
            status = 1
    except BaseException:
        traceback.print_exc()
        status = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        sys.path[:] = path
    return status


def main(argv) -> int:
    if not check_imports():
        return 1
    out_dir = argv[0]
    for k, tool in enumerate(commands(argv[1:]), 1):
        status = run_tool(tool, os.path.join(out_dir, f'{k}.out'))
        with open(os.path.join(out_dir, f'{k}.status'), 'w') as f:
            f.write(f'{status}\n')
        if status:
            return 1
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
