"""Programs built on edge's public API: the local assistant, the Raspberry Pi
deploy and the phone export. Nothing here reaches into edge's internals."""
