#!/usr/bin/python3
"""The entry points /usr/local/lib/seatwatch/activate and site-activate (this one file, uploaded under both
names by roles/pm2.py and roles/site.py): the activation module beside it, with the config named after
the entry point (activate.json, site-activate.json). Standard library only, like roles/activation.py.

    /usr/bin/python3 /usr/local/lib/seatwatch/activate RELEASE_DIR MARKER
    /usr/bin/python3 /usr/local/lib/seatwatch/activate releases

The module is loaded from this file's own directory (root's, checked again by the activation), never from
sys.path, and no bytecode is written beside it.
"""

import importlib.util
import os
import sys


def load_activation(directory):
    spec = importlib.util.spec_from_file_location("activation", os.path.join(directory, "activation.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    sys.dont_write_bytecode = True
    here = os.path.dirname(os.path.abspath(__file__))
    entry = os.path.join(here, os.path.basename(__file__))
    sys.exit(load_activation(here).main(entry + ".json", sys.argv[1:]))
