"""Sphinx configuration: MyST Markdown, furo, autodoc and sphinx-click."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from icqcodec import FORMAT_MAJOR, FORMAT_MINOR, __version__  # noqa: E402

project = "icqcodec"
author = "the icqcodec developers"
copyright = "2026, the icqcodec developers"
release = __version__
version = f"{__version__} (ICQ format {FORMAT_MAJOR}.{FORMAT_MINOR})"

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx_click"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence"]
html_theme = "furo"
html_title = f"icqcodec {__version__}"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_mock_imports = []  # icqcodec.torch needs PyTorch, icqcodec.hf transformers: the docs build without them
for optional in ("torch", "transformers"):
    try:
        __import__(optional)
    except ImportError:
        autodoc_mock_imports.append(optional)
napoleon_google_docstring = True
napoleon_numpy_docstring = True
exclude_patterns = ["_build"]
suppress_warnings = ["myst.xref_missing"] if False else []
