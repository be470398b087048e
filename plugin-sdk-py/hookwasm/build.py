"""Builds the Python plugin in a directory (default: the current one) into a WebAssembly
component of ``hookwasm:plugin@0.2.0``: its ``plugin.py`` with this SDK, by componentize-py.
Prints the component's path, ``target/hookwasm/NAME.wasm``, and nothing else on stdout.

    python -m hookwasm.build [DIR]
"""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import tomllib
from pathlib import Path


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    if not (root / "plugin.py").is_file():
        print(f"error: {root} has no plugin.py", file=sys.stderr)
        return 2
    name = root.name
    manifest = root / "pyproject.toml"
    if manifest.is_file():
        name = tomllib.loads(manifest.read_text()).get("project", {}).get("name", name)
    componentize = Path(sys.executable).parent / "componentize-py"
    if not componentize.exists():
        componentize = Path(shutil.which("componentize-py") or "componentize-py")
    sdk = Path(__file__).resolve().parent
    out = root / "target" / "hookwasm"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.wasm"
    command = [str(componentize), "-d", str(sdk / "wit"), "-w", "transformer", "componentize", "hookwasm._component"]
    for directory in [root, sdk.parent, *site.getsitepackages()]:
        command += ["-p", str(directory)]
    command += ["-o", str(path)]
    try:
        built = subprocess.run(command, stdout=subprocess.DEVNULL)
    except FileNotFoundError:
        print("error: componentize-py is not installed: pip install -r requirements.txt", file=sys.stderr)
        return 2
    if built.returncode != 0:
        return built.returncode
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
