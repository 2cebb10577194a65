"""``python -m steplake ...`` works like ``steplake ...``."""

from .cli import main

if __name__ == "__main__":
    main()
