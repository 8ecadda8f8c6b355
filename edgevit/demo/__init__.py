"""The attention explorer: draw a digit in the browser and watch its patches attend to each other.

`site` builds the static site (the page, the model compiled to WebAssembly, model.json); `server`
serves it on 127.0.0.1; the command is edgevit.cli.demo (`edgevit demo`).
"""
