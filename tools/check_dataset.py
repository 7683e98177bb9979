"""Validate a labeled or unlabeled dataset folder before a long job, and print a report.

    python tools/check_dataset.py /labeled                 # training + validation
    python tools/check_dataset.py /labeled --split validation --decode
    python tools/check_dataset.py train/unlabeled          # an unlabeled image folder
    python tools/check_dataset.py /labeled --quick         # layout + a few files, in seconds
    python tools/check_dataset.py unlabeled_224.sqsh --decode  # a squashfs image, read as it is
    python tools/check_dataset.py DIR          # COCO: DIR/annotations/instances_<split>.json
    python tools/check_dataset.py --coco instances_val.json val_images/   # any COCO layout

Unlike the dataset class, which stops at the first error, this reads every file and lists all
problems by kind. ``--decode`` decodes every image fully (finds truncated files; slower).
Exit status: 0 when no errors, 1 otherwise. Problems the dataset class repairs (an ``image_size``
that differs from the image header, clipped or dropped boxes, images without objects) are
reported as repairs, not errors, and counted as the dataset counts them.
``--quick`` lists no folder in full: it checks the layout and the first QUICK_SAMPLE files of
each folder (pairs, yml, image header), for a check before submitting jobs
(tools/slurm/submit_pipeline.sh); it cannot find a bad file outside that sample.
"""
import argparse
import os
import os.path as osp
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

from toolkit import bootstrap  # noqa: E402

bootstrap.setup()

from mmengine import fileio  # noqa: E402

from custom_modules.datasets.classes import LABELED_CLASSES  # noqa: E402
from custom_modules.datasets.labeled_index import (  # noqa: E402
    BAD_IMAGE, SIZE_MISMATCH, UNPAIRED, IndexReport, LabeledDataError, _open, _sanitize,
    parse_label_file, scan_split)
from custom_modules.fileio.listing import folder_entries, list_tree  # noqa: E402
from custom_modules.fileio.squashfs import DIR, OTHER, split_image_path  # noqa: E402
from custom_modules.errors import UserError  # noqa: E402

# what the pretraining configs read (their image_extensions; tests/data/test_any_images.py pins both)
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.webp', '.bmp', '.tif', '.tiff')
QUICK_SAMPLE = 32  # files per folder that --quick reads


def _check_image(path: str, decode: bool, orientation: bool = False):
    """(size, mode) of an image, with ``orientation`` also its EXIF orientation (1: none), or
    raise LabeledDataError."""
    from PIL import Image
    try:
        with _open(path) as f, Image.open(f) as img:
            if decode:
                img.load()
            if orientation:  # as read_image_header reads it, without decoding a PNG
                o = Image.Image.getexif(img).get(0x0112, 1)
                return img.size, img.mode, o if o in range(1, 9) else 1
            return img.size, img.mode
    except Exception as e:
        raise LabeledDataError(f'{path}: cannot read image ({e})', BAD_IMAGE) from e


def _check_pairs(args):
    items, decode = args
    class_to_idx = {c: i for i, c in enumerate(LABELED_CLASSES)}
    out = []
    for img_id, img_path, label_path in items:
        errors, parsed, mode, repairs = [], None, None, []
        try:
            size, mode = _check_image(img_path, decode)
        except LabeledDataError as e:
            errors.append((e.kind, str(e)))
            size = None
        try:
            yml_size, boxes, labels = parse_label_file(label_path, class_to_idx)
            if size is not None:
                # as the dataset does: the header's size is used, a differing yml one is repaired
                if yml_size is not None and tuple(yml_size) != tuple(size):
                    repairs.append((SIZE_MISMATCH, f'{label_path} (image_size {list(yml_size)}, '
                                    f'header {list(size)})'))
                parsed = (img_id, img_path, label_path, size, boxes, labels)
        except LabeledDataError as e:
            errors.append((e.kind, str(e)))
        out.append((parsed, mode, errors, repairs))
    return out


def _chunks(items, n):
    step = max(64, len(items) // (n * 8) + 1)
    return [items[i:i + step] for i in range(0, len(items), step)]


def check_labeled_split(root: str, split: str, decode: bool, workers: int) -> int:
    files = scan_split(root, split)
    report = IndexReport(split_dir=files.split_dir, ignored_files=files.ignored)
    errors: dict[str, list] = {}
    no_image, no_label = files.unpaired()
    for path in no_image + no_label:
        errors.setdefault(UNPAIRED, []).append(path)
    items = [(i, files.img_ids[i], files.label_ids[i])
             for i in sorted(set(files.img_ids) & set(files.label_ids))]
    modes, boxes_per_image, areas = Counter(), Counter(), Counter()
    with ProcessPoolExecutor(workers) as pool:
        results = pool.map(_check_pairs, [(c, decode) for c in _chunks(items, workers)])
        for chunk in results:
            for parsed, mode, errs, repairs in chunk:
                modes[mode] += mode is not None
                for kind, msg in errs:
                    errors.setdefault(kind, []).append(msg)
                if parsed is None:
                    continue
                for kind, example in repairs:
                    report.add(kind, example)
                rec = _sanitize(parsed, list(range(len(LABELED_CLASSES))), report)
                report.num_images += 1
                boxes_per_image[len(rec.labels)] += 1
                for x1, y1, x2, y2 in rec.bboxes.tolist():
                    a = (x2 - x1) * (y2 - y1)
                    areas['small (<32^2)' if a < 32**2 else
                          'medium' if a < 96**2 else 'large (>=96^2)'] += 1

    print(f'== {files.split_dir}')
    print(f'images: {len(files.img_ids)}  label files: {len(files.label_ids)}  '
          f'indexed: {report.num_images}  boxes: {report.num_boxes}')
    if files.img_ids:
        print(f'ids: {min(files.img_ids)}..{max(files.img_ids)}')
    print('image modes: ' + ', '.join(f'{m}: {n}' for m, n in modes.most_common()))
    if report.num_boxes:
        print('box sizes (COCO): ' + ', '.join(
            f'{k}: {areas[k]} ({100 * areas[k] / report.num_boxes:.1f}%)'
            for k in ('small (<32^2)', 'medium', 'large (>=96^2)')))
        print('boxes per image: ' + ', '.join(
            f'{k}: {v}' for k, v in sorted(boxes_per_image.items())))
    seen = report.class_counts
    print(f'classes seen: {len(seen)} of {len(LABELED_CLASSES)}')
    for name, n in seen.most_common():
        print(f'  {LABELED_CLASSES.index(name):3d} {name:<24s} {n}')
    missing = [c for c in LABELED_CLASSES if c not in seen]
    if missing and len(missing) < len(LABELED_CLASSES):
        print(f'classes never seen ({len(missing)}): ' + ', '.join(missing))
    if files.ignored:
        print(f'ignored files (not <id>.JPEG / <id>.yml): {len(files.ignored)}, e.g. '
              + ', '.join(files.ignored[:3]))
    for kind, n in sorted(report.problems.items()):
        print(f'repaired: {n} x {kind}, e.g. ' + ', '.join(report.examples[kind][:3]))
    for kind, msgs in sorted(errors.items()):
        print(f'ERROR: {len(msgs)} x {kind}')
        for m in msgs[:5]:
            print(f'    {m}')
    return sum(len(m) for m in errors.values())


def check_unlabeled(root: str, decode: bool, workers: int) -> int:
    # the dataset's listing (custom_modules/fileio/listing.py): the same files it trains on
    listing = list_tree(root)
    paths, other = [], Counter()
    for name in listing.files:
        # as mmpretrain's CustomDataset(extensions=...) matches, which lower-cases names
        if name.lower().endswith(IMAGE_EXTENSIONS):
            paths.append(fileio.join_path(root, name))
        else:
            other[osp.splitext(name)[1]] += 1
    sizes, modes, errors = Counter(), Counter(), []
    with ProcessPoolExecutor(workers) as pool:
        for chunk in pool.map(_check_unlabeled_chunk, [(c, decode) for c in _chunks(paths, workers)]):
            for size, mode, err in chunk:
                if err:
                    errors.append(err)
                else:
                    sizes[f'{size[0]}x{size[1]}'] += 1
                    modes[mode] += 1
    print(f'== {root} (unlabeled)')
    print(f'images: {len(paths)}')
    print('sizes: ' + ', '.join(f'{k}: {v}' for k, v in sizes.most_common(5)))
    print('modes: ' + ', '.join(f'{k}: {v}' for k, v in modes.most_common()))
    if other:
        print('other files (not used): ' + ', '.join(f'{k or "(none)"}: {v}' for k, v in other.items()))
    if listing.hidden:
        print(f'hidden (skipped): {len(listing.hidden)}, e.g. '
              + ', '.join(repr(p) for p in listing.hidden[:3]))
    errors = [f'{root}: {path!r} is {what}' for path, what in listing.other] + errors
    if not paths:
        errors.append(f'{root}: no image files found ({", ".join(IMAGE_EXTENSIONS)})')
    for e in errors[:10]:
        print(f'ERROR: {e}')
    return len(errors)


def _check_unlabeled_chunk(args):
    paths, decode = args
    out = []
    for p in paths:
        try:
            size, mode = _check_image(p, decode)
            out.append((size, mode, None))
        except LabeledDataError as e:
            out.append((None, None, str(e)))
    return out


def _first_files(folder: str, accept, n: int, max_depth: int = 1,
                 problems: list | None = None) -> list:
    """Up to ``n`` paths of files that ``accept(name)`` in ``folder`` (and sub-folders down to
    ``max_depth``), in directory order, reading the folder only until they are found; hidden
    names skipped, as the datasets skip them. A wanted name that is no file (a link inside an
    image, a link to nothing) goes to ``problems`` as (path, message)."""
    found = []
    for name, kind in folder_entries(folder):
        if len(found) >= n:
            break
        if name.startswith('.'):
            continue
        path = fileio.join_path(folder, name)
        if kind == DIR:
            if max_depth > 1:
                found += _first_files(path, accept, n - len(found), max_depth - 1, problems)
        elif accept(name):
            if kind == OTHER:
                if problems is not None:
                    problems.append((path, f'{_other_path(path)} is a symlink or special file, '
                                     'not an image (links inside a squashfs image are not '
                                     'followed)'))
            else:
                found.append(path)
    return found


def _other_path(path: str) -> str:
    """A path as the readers name it: ``IMAGE: 'inner/path'`` inside an image."""
    found = split_image_path(path) if path.startswith('sqsh://') else None
    return f'{found[0]}: {found[1]!r}' if found else repr(path)


def _id_file(suffix: str):
    return lambda name: name.endswith(suffix) and name[:-len(suffix)].isdigit()


def quick_check_labeled_split(root: str, split: str, decode: bool = False,
                              n: int = QUICK_SAMPLE) -> int:
    """Layout and the first ``n`` images and yml files of a split, without listing it all."""
    split_dir = fileio.join_path(root, split)
    img_dir = fileio.join_path(split_dir, 'images')
    label_dir = fileio.join_path(split_dir, 'labels')
    for d in (split_dir, img_dir, label_dir):
        if not fileio.isdir(d):
            print(f'ERROR: {d}: folder does not exist (expected <root>/<split>/images/<id>.JPEG '
                  'and <root>/<split>/labels/<id>.yml)')
            return 1
    not_files = []
    images = _first_files(img_dir, _id_file('.JPEG'), n, problems=not_files)
    labels = _first_files(label_dir, _id_file('.yml'), n, problems=not_files)
    errors = [msg for _, msg in not_files]
    if not images:
        errors.append(f'{img_dir}: no <id>.JPEG files')
    if not labels:
        errors.append(f'{label_dir}: no <id>.yml files')
    items = {}
    for path in images:
        img_id = osp.basename(path)[:-len('.JPEG')]
        items[img_id] = (int(img_id), path, fileio.join_path(label_dir, f'{img_id}.yml'))
    for path in labels:
        img_id = osp.basename(path)[:-len('.yml')]
        items.setdefault(img_id, (int(img_id), fileio.join_path(img_dir, f'{img_id}.JPEG'), path))
    named = {path for path, _ in not_files}
    for img_id, img_path, label_path in items.values():
        if img_path in named or label_path in named:
            continue
        missing = [p for p in (img_path, label_path) if not fileio.isfile(p)]
        if missing:
            errors.append(f'{UNPAIRED}: {missing[0]} does not exist')
            continue
        for _, _, errs, _ in _check_pairs(([(img_id, img_path, label_path)], decode)):
            errors += [msg for _, msg in errs]
    print(f'== {split_dir} (quick: {len(items)} image/yml pairs read, the rest not checked)')
    for m in errors[:5]:
        print(f'ERROR: {m}')
    return len(errors)


def quick_check_unlabeled(root: str, decode: bool = False, n: int = QUICK_SAMPLE) -> int:
    """The first ``n`` images (any case, two folder levels) have a readable header."""
    not_files = []
    paths = _first_files(root, lambda name: name.lower().endswith(IMAGE_EXTENSIONS), n,
                         max_depth=2, problems=not_files)
    errors = [msg for _, msg in not_files]
    errors += [err for _, _, err in _check_unlabeled_chunk((paths, decode)) if err]
    if not paths:
        errors.append(f'{root}: no image files found (first two folder levels; '
                      f'{", ".join(IMAGE_EXTENSIONS)})')
    print(f'== {root} (unlabeled, quick: {len(paths)} files read, the rest not checked)')
    for e in errors[:5]:
        print(f'ERROR: {e}')
    return len(errors)


def _check_coco_chunk(args):
    items, decode = args
    out = []
    for i, img_id, path, size in items:
        try:
            out.append((i, img_id, path, size, _check_image(path, decode, True), None))
        except LabeledDataError as e:
            out.append((i, img_id, path, size, None, str(e)))
    return out


def check_coco(ann: str, img_dir: str, decode: bool, workers: int, quick: bool = False) -> int:
    """Every problem of a COCO annotation file and its images, listed by kind; the count of
    errors. ``quick``: the image headers of the first QUICK_SAMPLE images only (the JSON and
    the presence of every file are checked in full: one listing per folder)."""
    from custom_modules.datasets import coco_det
    print(f'== {ann} (images in {img_dir})')
    try:
        data = coco_det.load_json(ann)
    except coco_det.CocoDataError as e:
        print(f'ERROR: {e}')
        return 1
    errors: dict[str, list] = {}
    for kind, msg in coco_det.structure_problems(ann, data):
        errors.setdefault(kind, []).append(msg)
    images = [(i, im) for i, im in enumerate(data['images'])
              if isinstance(im, dict) and {'id', 'file_name'} <= set(im)]
    items = [(i, im['id'], osp.join(img_dir, im['file_name']), im) for i, im in images]
    listed = [im for _, im in images]
    lost = set()
    for k, img_id, path in coco_det.missing_images(listed, img_dir):
        lost.add(k)
        errors.setdefault('missing image file', []).append(
            f'{ann}: images[{images[k][0]}] (id {img_id}): {path} does not exist')
    present = [it for k, it in enumerate(items) if k not in lost]
    if quick:
        present = present[:QUICK_SAMPLE]
    modes, sizes = Counter(), {}
    with ProcessPoolExecutor(workers) as pool:
        for chunk in pool.map(_check_coco_chunk, [(c, decode) for c in _chunks(present, workers)]):
            for i, img_id, path, im, found, err in chunk:
                if err:
                    errors.setdefault(BAD_IMAGE, []).append(err)
                    continue
                stored, mode, orientation = found
                modes[mode] += 1
                # the frame the dataset reads the boxes in (EXIF orientation applied or not)
                _, (w, h) = coco_det.coco_frame(im, stored, orientation)
                sizes[img_id] = (w, h)
                size = (im.get('width'), im.get('height'))
                if None not in size and tuple(size) != (w, h):
                    errors.setdefault('image size differs from the file', []).append(
                        f'{ann}: images[{i}] (id {img_id}): width x height {size[0]} x {size[1]}'
                        f', the file is {w} x {h}')
    cat_names = {c['id']: c['name'] for c in data['categories']
                 if isinstance(c, dict) and {'id', 'name'} <= set(c)}
    boxes_of, per_class, n_boxes = Counter(), Counter(), 0
    for i, a in enumerate(data['annotations']):
        if not (isinstance(a, dict) and {'id', 'image_id', 'category_id', 'bbox'} <= set(a)):
            continue
        box = a['bbox']
        if not (isinstance(box, list) and len(box) == 4
                and all(isinstance(v, (int, float)) for v in box)):
            continue
        n_boxes += 1
        boxes_of[a['image_id']] += 1
        per_class[a['category_id']] += 1
        x, y, w, h = box
        where = f'{ann}: annotations[{i}] (id {a["id"]}, image {a["image_id"]})'
        if w <= 0 or h <= 0:
            errors.setdefault('box with non-positive size', []).append(f'{where}: bbox {box}')
        elif a['image_id'] in sizes:
            W, H = sizes[a['image_id']]
            if x < -0.5 or y < -0.5 or x + w > W + 0.5 or y + h > H + 0.5:
                errors.setdefault('box outside the image', []).append(
                    f'{where}: bbox {box} in a {W} x {H} image')
    print(f'images: {len(data["images"])}  annotations: {len(data["annotations"])}  '
          f'categories: {len(data["categories"])}')
    print('image modes: ' + ', '.join(f'{m}: {n}' for m, n in modes.most_common()))
    without = [im['id'] for _, im in images if not boxes_of[im['id']]]
    if without:
        # tests/data/test_coco_data.py checks that every detection config keeps them
        print(f'images without annotations: {len(without)} (kept as negatives: the detection '
              'configs train with filter_cfg=dict(filter_empty_gt=False); a config with '
              'filter_empty_gt=True drops them)')
    print(f'classes with boxes: {sum(1 for c in cat_names if per_class[c])} of {len(cat_names)}')
    for cat_id, n in per_class.most_common():
        if cat_id in cat_names:
            print(f'  {cat_id:>6} {cat_names[cat_id]:<24s} {n}')
    empty = [f'{cat_names[c]} (id {c})' for c in cat_names if not per_class[c]]
    if empty:
        print(f'categories without any box ({len(empty)}): ' + ', '.join(empty[:10])
              + (', ...' if len(empty) > 10 else ''))
    for kind, msgs in sorted(errors.items()):
        if quick:  # one line per problem, as --quick prints the course layout's
            print('\n'.join(f'ERROR: {m}' for m in msgs[:5]))
            continue
        print(f'ERROR: {len(msgs)} x {kind}')
        for m in msgs[:5]:
            print(f'    {m}')
    return sum(len(m) for m in errors.values())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('root', nargs='?', help='labeled root (course layout with training/ '
                        'validation/, or COCO layout with annotations/instances_<split>.json) or '
                        'an unlabeled image folder; either may be a squashfs image or inside one')
    parser.add_argument('--coco', nargs=2, metavar=('ANN_FILE', 'IMAGES'),
                        help='a COCO annotation file and its image folder, in any layout')
    parser.add_argument('--split', action='append', help='split to check (repeatable); '
                        'default: every split folder present')
    parser.add_argument('--decode', action='store_true', help='fully decode every image')
    parser.add_argument('--workers', type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument('--quick', action='store_true', help=f'check the layout and the first '
                        f'{QUICK_SAMPLE} files of each folder only (seconds on any size)')
    args = parser.parse_args(argv)
    if bool(args.root) == bool(args.coco):
        parser.error('give a dataset folder or --coco ANN_FILE IMAGES')
    from toolkit.data_source import describe
    try:
        source = None if args.coco else describe(args.root, flag='dataset')
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    if args.coco or source.kind == 'coco':
        splits = [] if args.coco else args.split or source.splits
        missing = [s for s in splits if s not in source.coco_splits]
        for split in missing:  # a split asked for by name: say which the folder has
            print(f'ERROR: {source.ann_file(split)}: no such file (annotations/ has: '
                  + ' '.join(f'instances_{s}.json' for s in source.coco_splits) + ')')
        pairs = [args.coco] if args.coco else [
            (source.ann_file(s), source.split_folder(s)) for s in splits if s not in missing]
        n_errors = len(missing) + sum(check_coco(ann, img_dir, args.decode, args.workers,
                                                 args.quick) for ann, img_dir in pairs)
        print(f'{"OK" if not n_errors else f"FAILED: {n_errors} errors"}')
        return 1 if n_errors else 0
    root = source.root
    splits = args.split or list(source.splits)
    n_errors = 0
    # a problem that stops the listing itself (a link inside an image, a missing folder) is one
    # ERROR line for its split, as any other problem
    for split in splits or [None]:
        try:
            if split is None:
                n_errors += (quick_check_unlabeled(root, args.decode) if args.quick
                             else check_unlabeled(root, args.decode, args.workers))
            elif args.quick:
                n_errors += quick_check_labeled_split(root, split, args.decode)
            else:
                n_errors += check_labeled_split(root, split, args.decode, args.workers)
        except (FileNotFoundError, UserError) as e:
            print(f'ERROR: {e}')
            n_errors += 1
    print(f'{"OK" if not n_errors else f"FAILED: {n_errors} errors"}')
    return 1 if n_errors else 0


if __name__ == '__main__':
    sys.exit(main())
