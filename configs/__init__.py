"""The shipped configs, installed as package data under `tfpipe.configs`.

`tfpipe.load_config("digits_mlp")` loads `digits_mlp.yaml` from here.
"""
