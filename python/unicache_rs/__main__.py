"""``python -m unicache_rs``: the seed writer's command line (--input, --output)."""

from .seed import main

main()
