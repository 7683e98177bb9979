"""What each training job of tools/slurm/submit_pipeline.sh would do with its work folder, checked
before anything is queued, in one Python start (the imports take seconds):

    check_stages.py ARGS_VAR GPUS CONFIG [train.py args] [';' ARGS_VAR GPUS CONFIG ...]

Each stage goes through `tools/train.py --check-inputs-only` (nothing written) with the number of
processes its job will have; one line per stage: `finished: ...`, `resume: ...` or `new: ...`.
A work folder trained from other inputs (a rehearsal's, an earlier pipeline's) stops it with one
`error: ...` line naming the folder, the differences and the ways on, exit status 2: queued, its
job would wait for hours and then stop, and every job after it would stay pending. ARGS_VAR (e.g.
DET_ARGS) is the variable a user adds --allow-input-change to for that stage.
"""
import contextlib
import io
import os
import os.path as osp
import runpy
import sys


def stages(argv):
    stage = []
    for arg in [*argv, ';']:
        if arg != ';':
            stage.append(arg)
        elif stage:
            yield stage[0], stage[1], stage[2:]
            stage = []


def fail(message):
    print(f'error: {message}', file=sys.stderr, flush=True)
    sys.exit(2)


def main(argv):
    tools = osp.dirname(osp.dirname(osp.abspath(__file__)))
    sys.path.insert(0, tools)  # the toolkit, as train.py finds it beside itself
    train = runpy.run_path(osp.join(tools, 'train.py'))
    from toolkit.resume_policy import ChangedInputsError
    from custom_modules.errors import UserError
    for args_var, gpus, args in stages(argv):
        os.environ['WORLD_SIZE'] = gpus  # what the record holds for the job's processes
        said = io.StringIO()  # train.py's notes (e.g. what --pretrained is): only the verdict
        try:
            with contextlib.redirect_stdout(said):
                train['main']([*args, '--check-inputs-only'])
        except ChangedInputsError as e:
            diffs = '; '.join(e.diffs[:8]) + (f'; ... {len(e.diffs)} in all' if e.diffs[8:] else '')
            fail(f'{e.work_dir} holds a run trained from other inputs than this pipeline gives '
                 f'({diffs}); queued, its job would stop there. Submit from another '
                 'folder (work_dirs/ is made where submit_pipeline.sh runs), or move '
                 f'{e.work_dir} away, or continue it with these inputs: '
                 f'{args_var}="--allow-input-change"')
        except UserError as e:
            fail(f'{args[0]}: {e}')
        print(said.getvalue().strip().splitlines()[-1])


if __name__ == '__main__':
    main(sys.argv[1:])
