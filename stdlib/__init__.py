"""The standard library, written in dp itself (`*.dp`): FeedForward, the vision modules,
sequences and recurrent cells, attention and transformers. The loader reads these files
before every program; this package exists so that they install with dp."""
