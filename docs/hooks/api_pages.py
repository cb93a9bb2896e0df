"""MkDocs hook: write the API reference pages from the package tree at build time.

Each page of :data:`PAGES` documents some modules of ``src/aras400k`` with
mkdocstrings. A package is shown by its docstring (the map of its modules), then every
public module under it, found on disk when the site is built: a module added to the
package appears in the reference without editing the docs, and a docstring that
mkdocstrings cannot render fails ``mkdocs build --strict``. Members a package
re-exports from its modules are documented once, in the module that defines them.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

SRC = Path(__file__).parents[2] / "src"

#: Page -> (title, lead paragraph, modules or packages documented on it, in order). A
#: package is documented with everything under it; ``NAME:doc`` shows its docstring only.
PAGES: dict[str, tuple[str, str, list[str]]] = {
    "api/index.md": (
        "aras400k",
        "The top-level package, the class table, the logger-independent callbacks, figures and prediction files, "
        "and the safe-I/O layer: checkpoint loading, file writing, run locks, input errors, threads and budgets.",
        ["aras400k:doc", "aras400k.classes", "aras400k.callbacks", "aras400k.prediction", "aras400k.plotting",
         "aras400k.checkpoints", "aras400k.files", "aras400k.locking", "aras400k.errors", "aras400k.threads",
         "aras400k.budget"],
    ),
    "api/data.md": (
        "aras400k.data",
        "Shard sets, datasets and DataModules, the demo set, the importers and the data tools.",
        ["aras400k.data"],
    ),
    "api/segmentation.md": (
        "aras400k.models.segmentation",
        "The six segmenters as one LightningModule.",
        ["aras400k.models.segmentation"],
    ),
    "api/stylegan3.md": (
        "aras400k.models.stylegan3",
        "StyleGAN3 / StyleGAN2 networks, their training module, equivariance metrics and the official-pickle loader.",
        ["aras400k.models.stylegan3"],
    ),
    "api/spade.md": (
        "aras400k.models.spade",
        "The SPADE generator, the U-Net discriminator, their losses and training module.",
        ["aras400k.models.spade"],
    ),
    "api/gan.md": (
        "aras400k.models.gan",
        "What both GANs share: the GANModule base, losses, regularisers, ADA, EMA.",
        ["aras400k.models.gan"],
    ),
    "api/metrics.md": (
        "aras400k.metrics",
        "torchmetrics metrics and report builders.",
        ["aras400k.metrics"],
    ),
    "api/captioning.md": (
        "aras400k.captioning",
        "The captioner, its backends, prompts and caption sidecars.",
        ["aras400k.captioning"],
    ),
    "api/synthesis.md": (
        "aras400k.synthesis",
        "Sampling the GANs into shard sets and pseudo-labelling them with a segmenter.",
        ["aras400k.synthesis"],
    ),
    "api/evaluation.md": (
        "aras400k.evaluation",
        "The `aras-eval` report and the real / synthetic study of `aras-ablate`.",
        ["aras400k.evaluation", "aras400k.ablation"],
    ),
    "api/pipeline.md": (
        "aras400k.pipeline",
        "`aras-pipeline`: the paper's stages from one config, run, resumed and indexed.",
        ["aras400k.pipeline"],
    ),
}


def _path(module: str) -> Path:
    return SRC.joinpath(*module.split("."))


def _is_package(module: str) -> bool:
    return (_path(module) / "__init__.py").is_file()


def _submodules(package: str) -> list[str]:
    """Public modules and subpackages directly under ``package``, sorted by name."""
    folder = _path(package)
    found = [p.stem for p in folder.glob("*.py") if not p.name.startswith("_")]
    found += [p.name for p in folder.iterdir() if (p / "__init__.py").is_file() and not p.name.startswith("_")]
    return [f"{package}.{name}" for name in sorted(found)]


def _defined_in(init: Path) -> list[str]:
    """Public classes, functions and constants defined (not imported) in a package's ``__init__.py``."""
    names = []
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [t.id for t in targets if isinstance(t, ast.Name)]
    return [name for name in names if not name.startswith("_")]


def _directives(module: str) -> list[str]:
    """The mkdocstrings directives for a module, or for a package and everything under it."""
    module, _, only = module.partition(":")
    if only == "doc":
        return [f"::: {module}\n    options:\n      members: false\n"]
    if not _is_package(module):
        if not _path(module).with_suffix(".py").is_file():
            raise FileNotFoundError(f"docs/hooks/api_pages.py names {module}, which is not in {SRC}")
        return [f"::: {module}\n"]
    # The package's docstring and what its __init__ defines; its re-exports are
    # documented where they are defined.
    own = _defined_in(_path(module) / "__init__.py")
    members = f"[{', '.join(own)}]" if own else "false"
    lines = [f"::: {module}\n    options:\n      members: {members}\n"]
    for sub in _submodules(module):
        lines += _directives(sub)
    return lines


def page_markdown(title: str, lead: str, modules: list[str]) -> str:
    """The Markdown source of one API page.

    Args:
        title: Page title.
        lead: First paragraph.
        modules: Modules and packages documented on the page.

    Returns:
        The page's Markdown.
    """
    body = [directive for module in modules for directive in _directives(module)]
    return f"# {title}\n\n{lead}\n\n" + "\n".join(body)


def on_files(files: Files, config: MkDocsConfig, **kwargs: Any) -> Files:
    """Add the generated API pages to the site's files.

    Args:
        files: The documentation files found in ``docs/``.
        config: The MkDocs configuration.
        **kwargs: Other arguments MkDocs passes to hooks.

    Returns:
        The files, with the API pages added.
    """
    for path, (title, lead, modules) in PAGES.items():
        files.append(File.generated(config, path, content=page_markdown(title, lead, modules)))
    return files
