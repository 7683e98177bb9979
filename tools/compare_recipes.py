"""The recipe comparison at CPU demo scale, on generated data: every pretraining x every
fine-tuning recipe on one budget, each cell trained with tools/train.py and evaluated with
tools/test.py, the table written to OUT/results.md.

    python tools/compare_recipes.py [--out work_dirs/compare] [--data data/synthetic]
                                    [--recipes WORD ...] [--init NAME ...] [--lr LR ...]

`--recipes semi` (part of the default run) continues the seed recipe's MoCo v2 cell for one pass
over the labeled images twice, semi-supervised (Soft Teacher, with the unlabeled images) and
supervised, on the same labeled images, steps and LR; their fine-tuning minutes include the
seed cell's.

--lr trains each chosen fine-tuning once per learning rate (a sweep: the LR column), --init
keeps the cells that start from the named pretrainings (MoCo v2, DenseCL, MAE, random).

A rerun skips the trainings that finished (an interrupted one resumes). The budget: each
pretraining 8 epochs of the 256 unlabeled images at 96 px, batch 16; each fine-tuning 4 epochs
of the 160 training images (640 images seen), evaluated on the 64 validation images.
"""
import argparse
import os
import os.path as osp
import re
import subprocess
import sys
import time

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
PRETRAIN = {  # name -> demo config of that pretraining, all on the same data, epochs and batch
    'MoCo v2': 'configs/mocov2/mocov2_resnet50_1xb16-coslr-8e_synthetic96.py',
    'DenseCL': 'configs/densecl/densecl_resnet50_1xb16-coslr-8e_synthetic96.py',
    'MAE': 'configs/mae/mae_vit-tiny-p16_1xb16-coslr-8e_synthetic96.py',
}
# (fine-tuning recipe, its demo config, the pretrainings it starts from; None: random backbone)
RECIPES = [
    ('seed (R50, frozen BN, 2fc head, one scale)',
     'configs/faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn_1xb4-demo-4e_synthetic.py',
     ('MoCo v2', 'DenseCL', None)),
    ('SSL (R50, SyncBN, 4conv1fc head, multi-scale)',
     'configs/faster_rcnn/faster-rcnn_r50-mocov2-pre_fpn-syncbn-4conv1fc_1xb8-ms-demo-4e_synthetic.py',
     ('MoCo v2', 'DenseCL', None)),
    ("peer's ViT (simple pyramid, layer decay)",
     'configs/vitdet/faster-rcnn_vit-tiny-mae-pre_sfp_1xb4-demo-4e_synthetic.py',
     ('MAE', None)),
    ('ViTDet-style (windowed ViT, simple pyramid, LSJ)',
     'configs/vitdet/faster-rcnn_vit-tiny-win-mae-pre_sfp_1xb4-lsj-demo-4e_synthetic.py',
     ('MAE', None)),
]
CELLS = [(recipe, cfg, init) for recipe, cfg, inits in RECIPES for init in inits]
SEED_DEMO = RECIPES[0][1]
SEMI_DEMO = 'configs/soft_teacher/soft-teacher_faster-rcnn_r50-mocov2-pre_fpn_1xb5-demo-2e_synthetic.py'
SEMI_LR, SEMI_WARMUP = 0.0005, 10  # the semi demo's
# `--recipes semi`: the seed cell from MoCo v2 continued for one pass over the labeled images,
# with and without the unlabeled ones: the same labeled images, optimizer steps (one labeled
# image each) and learning rate, so the difference is what the unlabeled images teach.
SEMI_BASE = CELLS[0]
CONTINUED = [
    ('semi-supervised: the seed cell + Soft Teacher, 1 epoch (1 labeled : 4 unlabeled)',
     SEMI_DEMO, ['train_cfg.max_epochs=1'], True),
    ('supervised: the seed cell + 1 epoch at 1 labeled image (same steps and LR)',
     SEED_DEMO, ['model.backbone.init_cfg=None', 'train_cfg.max_epochs=1',
                 'train_dataloader.batch_size=1', f'optim_wrapper.optimizer.lr={SEMI_LR}',
                 f'param_scheduler.0.end={SEMI_WARMUP}'], False),
]
RANDOM_INIT = ['--cfg-options', 'model.backbone.init_cfg=None']
AP_LINE = re.compile(r'^ Average Precision +\(AP\) @\[ IoU=(0\.50:0\.95|0\.50) +\| area= +all '
                     r'\| maxDets=100 \] = (-?[0-9.]+)')


def slug(text: str) -> str:
    return re.sub(r'[^a-z0-9]+', '-', text.lower()).strip('-')


def run(cmd: list, log: str) -> float:
    """Run a tool with its output in ``log``; minutes taken. Stops the comparison on a failure,
    with the log's end."""
    t = time.time()
    with open(log, 'w') as f:
        r = subprocess.run([sys.executable, *cmd], cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        sys.exit(f'error: {" ".join(cmd)} failed (exit {r.returncode}); its log {log} ends:\n'
                 + ''.join(open(log).readlines()[-15:]))
    return (time.time() - t) / 60


def train(cmd: list, work_dir: str) -> float:
    """tools/train.py once per work folder: a rerun reads the minutes the finished run took."""
    done = osp.join(work_dir, 'train_minutes')
    if not osp.exists(done):
        minutes = run(['tools/train.py', *cmd, '--work-dir', work_dir, '--resume'],
                      osp.join(work_dir, 'train.log'))
        open(done, 'w').write(f'{minutes:.2f}\n')
    return float(open(done).read())


def last_checkpoint(work_dir: str) -> str:
    return open(osp.join(work_dir, 'last_checkpoint')).read().strip()


def evaluate(cfg: str, work: str, data: str) -> tuple[str, str]:
    """(AP, AP50) of the work folder's last checkpoint on the validation split, as tools/test.py
    prints them (a semi-supervised config evaluates its teacher)."""
    test_log = osp.join(work, 'test.log')
    run(['tools/test.py', cfg, last_checkpoint(work), '--data-root', osp.join(data, 'labeled'),
         '--split', 'validation', '--work-dir', osp.join(work, 'test')], test_log)
    ap = dict(m.groups() for m in map(AP_LINE.match, open(test_log)) if m)
    if len(ap) != 2:
        sys.exit(f'error: no AP summary in {test_log}')
    return ap['0.50:0.95'], ap['0.50']


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--out', default='work_dirs/compare')
    p.add_argument('--data', default='data/synthetic',
                   help='holds unlabeled/ and labeled/; generated as make demo does if missing')
    p.add_argument('--recipes', nargs='+', metavar='WORD',
                   help='only the fine-tuning recipes whose name starts with one of these words '
                        '(seed, SSL, peer, ViTDet, semi), and the pretrainings they start from')
    p.add_argument('--init', nargs='+', metavar='NAME',
                   help='only the cells that start from these pretrainings (random: none)')
    p.add_argument('--lr', nargs='+', type=float, metavar='LR',
                   help="train each fine-tuning at these learning rates (the config's if not given)")
    args = p.parse_args(argv)
    words = {w.lower() for w in args.recipes or ()}
    semi = not args.lr and (not words or 'semi' in words) and (
        not args.init or 'moco v2' in {n.lower() for n in args.init})
    cells = [c for c in CELLS if not args.recipes
             or any(c[0].lower().startswith(w) for w in words)]
    cells = [c for c in cells if not args.init
             or (c[2] or 'random').lower() in {n.lower() for n in args.init}]
    if semi and SEMI_BASE not in cells:
        cells.insert(0, SEMI_BASE)  # what the semi-supervised rows continue
    if not cells:
        p.error('--recipes / --init: no cell left')
    out, data = osp.abspath(args.out), osp.abspath(args.data)
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    if not osp.isdir(osp.join(data, 'labeled')):
        run(['tools/make_synthetic_data.py', '--out', data, '--num-unlabeled', '256',
             '--num-train', '160', '--num-val', '64'], osp.join(out, 'make_data.log'))

    pretrained, minutes = {}, {}
    for name, cfg in PRETRAIN.items():
        if name not in {init for _, _, init in cells}:
            continue
        work = osp.join(out, 'pretrain', slug(name))
        os.makedirs(work, exist_ok=True)
        print(f'pretraining {name} ({cfg})', flush=True)
        minutes[name] = train([cfg, '--data-root', osp.join(data, 'unlabeled')], work)
        pretrained[name] = last_checkpoint(work)

    rows, works = [], {}
    for (recipe, cfg, init), lr in [(c, lr) for c in cells for lr in args.lr or [None]]:
        work = osp.join(out, slug(f'{recipe.split()[0]} {init or "random"}'
                                  + (f' lr {lr:g}' if lr else '')))
        os.makedirs(work, exist_ok=True)
        print(f'fine-tuning: {recipe} from {init or "a random backbone"}'
              + (f' at lr {lr:g}' if lr else ''), flush=True)
        init_args = ['--pretrained', pretrained[init]] if init else list(RANDOM_INIT)
        if lr:  # train.py takes one --cfg-options list: RANDOM_INIT's where it is there
            init_args += ([] if '--cfg-options' in init_args else ['--cfg-options']) \
                + [f'optim_wrapper.optimizer.lr={lr}']
        ft = train([cfg, '--data-root', osp.join(data, 'labeled'), *init_args], work)
        works[recipe, cfg, init] = work, ft
        ap, ap50 = evaluate(cfg, work, data)
        rows.append((recipe, init or 'random init', lr, ap, ap50, minutes.get(init, 0), ft))
    for recipe, cfg, options, unlabeled in CONTINUED if semi else []:
        base_work, base_minutes = works[SEMI_BASE]
        start = last_checkpoint(base_work)
        work = osp.join(out, slug(recipe.split(':')[0] + ' moco v2'))
        os.makedirs(work, exist_ok=True)
        print(f'continuing {start}: {recipe}', flush=True)
        extra = ['--unlabeled', osp.join(data, 'unlabeled')] if unlabeled else []
        ft = train([cfg, '--data-root', osp.join(data, 'labeled'), *extra, '--cfg-options',
                    f'load_from={start}', *options], work)
        ap, ap50 = evaluate(cfg, work, data)
        rows.append((recipe, SEMI_BASE[2], None, ap, ap50, minutes.get(SEMI_BASE[2], 0),
                     base_minutes + ft))

    lines = [f'Recipe comparison at CPU demo scale (tools/compare_recipes.py), {time.strftime("%F")}'
             f', {os.cpu_count()} CPU cores, data {args.data}; minutes of each training as it ran, '
             f'this invocation {(time.time() - t0) / 60:.0f} min', '',
             '| fine-tuning recipe | pretraining |' + (' LR |' if args.lr else '')
             + ' AP | AP50 | pretraining min | fine-tuning min |',
             '|---|---|' + ('---|' if args.lr else '') + '---|---|---|---|']
    lines += [f'| {r} | {i} |' + (f' {lr:g} |' if args.lr else '')
              + f' {ap} | {ap50} | {pm:.1f} | {fm:.1f} |' for r, i, lr, ap, ap50, pm, fm in rows]
    text = '\n'.join(lines) + '\n'
    open(osp.join(out, 'results.md'), 'w').write(text)
    print(text + f'(also in {osp.join(out, "results.md")}; logs and checkpoints in {out}/)')


if __name__ == '__main__':
    main()
