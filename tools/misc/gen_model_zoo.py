"""Write the README's model-zoo tables from the OpenMMLab metafiles.

``model-index.yml`` lists the metafiles (``configs/*/metafile.yml``), the
one place for each config's task, dataset, paper metrics, parameters and
FLOPs. One table per training dataset goes between ``<!-- model-zoo:<dataset>
start -->`` and ``... end -->`` in README.md::

    python tools/misc/gen_model_zoo.py            # rewrite the tables
    python tools/misc/gen_model_zoo.py --check    # exit 1 if out of date
"""
import argparse
import os.path as osp
import re
import sys

from mmengine.fileio import load

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# Metric columns per dataset, in the metafiles' metric names.
METRICS = {'COCO': ('box AP', 'mask AP'), 'ADE20K': ('mIoU', )}


def load_models(root=ROOT):
    """Every ``Models`` entry of the metafiles ``model-index.yml`` imports,
    each with its collection's fields under ``'Collection'``."""
    models = []
    for metafile in load(osp.join(root, 'model-index.yml'))['Import']:
        meta = load(osp.join(root, metafile))
        collections = {c['Name']: c for c in meta.get('Collections', [])}
        models += [dict(m, Collection=collections[m['In Collection']])
                   for m in meta['Models']]
    return models


def render_table(models, dataset):
    """Markdown table (and its footnotes) of the ``dataset`` models."""
    rows = [m for m in models if m['Metadata']['Training Data'] == dataset]
    inputs = sorted({m['Metadata']['FLOPs Input'] for m in rows})
    names = METRICS[dataset]
    header = (['Config', 'Backbone', 'Method', 'Schedule', 'Params (M)',
               f"FLOPs (G) at {', '.join(inputs)}"] +
              [f'{n} (paper)' for n in names])
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + ' --- |' * len(header)]
    for model in rows:
        meta = model['Metadata']
        metrics = {k: v for result in model.get('Results') or []
                   for k, v in result['Metrics'].items()}
        schedule = (f"{meta['Epochs']} epochs" if 'Epochs' in meta else
                    f"{meta['Iterations'] // 1000}k iters")
        cells = [
            f"[{model['Name']}]({model['Config']})",
            meta['Architecture'][0],
            model['In Collection'],
            schedule,
            f"{meta['Parameters'] / 1e6:.2f}",
            f"{meta['FLOPs'] / 1e9:.0f}",
        ] + [f'{metrics[n]:.1f}' if n in metrics else '-' for n in names]
        lines.append('| ' + ' | '.join(cells) + ' |')
    # Each source once, in the table's order.
    sources = dict.fromkeys(m['Collection']['Results Source'] for m in rows)
    return '\n'.join(lines + [''] + [f'Paper figures: {s}' for s in sources])


def render_readme(text, models):
    """``text`` with every model-zoo marker pair's content regenerated."""
    for dataset in sorted({m['Metadata']['Training Data'] for m in models}):
        start = f'<!-- model-zoo:{dataset.lower()} start -->'
        end = f'<!-- model-zoo:{dataset.lower()} end -->'
        table = render_table(models, dataset)
        text, found = re.subn(
            re.escape(start) + '.*?' + re.escape(end),
            lambda _: f'{start}\n{table}\n{end}', text, flags=re.S)
        if not found:
            sys.exit(f'README has no "{start}" ... "{end}" pair for the '
                     f'{dataset} models: add the two marker lines where the '
                     'table belongs')
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--readme', default=osp.join(ROOT, 'README.md'))
    parser.add_argument(
        '--check', action='store_true',
        help='only report whether the README tables are up to date')
    args = parser.parse_args()
    with open(args.readme, encoding='utf-8') as f:
        text = f.read()
    new = render_readme(text, load_models())
    if args.check and new != text:
        sys.exit(f'{args.readme}: model-zoo tables differ from the '
                 'metafiles; run python tools/misc/gen_model_zoo.py')
    if new != text:
        with open(args.readme, 'w', encoding='utf-8') as f:
            f.write(new)
        print(f'{args.readme}: model-zoo tables rewritten')
    else:
        print(f'{args.readme}: model-zoo tables are up to date')


if __name__ == '__main__':
    main()
