"""``python -m course_lib.accelerate_configs NAME``: print the shipped config's path (exit 2 for an unknown name)."""
import sys

from ..errors import ConfigError
from . import config_names, config_path

if len(sys.argv) != 2:
    print(f"usage: python -m course_lib.accelerate_configs NAME  (one of {', '.join(config_names())})", file=sys.stderr)
    raise SystemExit(2)
try:
    print(config_path(sys.argv[1]))
except ConfigError as err:
    print(f"error: {err}", file=sys.stderr)
    raise SystemExit(2) from None
