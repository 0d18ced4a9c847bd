"""The chat page goes into the sdist and the wheel: built here (``cd web && npm run build``) when a clone lacks it.

The page is built by Vite into ``src/tokenrelay/server/static`` (git-ignored), which the build ships as artifacts.
An sdist already holds it, so installing one needs no Node. An editable install (``make install``) is left alone:
``make web`` builds the page there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class ChatPageHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        if version == "editable" or (root / "src/tokenrelay/server/static/index.html").is_file():
            return
        web = root / "web"
        npm = shutil.which("npm")
        if not (web / "package.json").is_file() or npm is None:
            why = "npm, from Node 20+, is not installed" if (web / "package.json").is_file() else "no web/ folder"
            print(
                f"WARNING: the chat page is not built and cannot be ({why}): this package serves the API, "
                "and / only says the page is missing. Build it first: make web",
                file=sys.stderr,
            )
            return
        if not (web / "node_modules").is_dir():
            subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=web, check=True)
        subprocess.run([npm, "run", "build"], cwd=web, check=True)
