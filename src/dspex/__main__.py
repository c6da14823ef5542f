from dspex.cli import run

run()
