"""Data a program names: the bundled digits, `.npz`, `.csv` and text files, generated tasks,
and the seeded streams of batches that training draws from them. Every bad file is a
DpError that points at the expression naming it; nothing here executes code from a file."""
