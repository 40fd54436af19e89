"""Reports of grids: run files -> DataFrames (`results`), statistics over seeds (`stats`),
Markdown/LaTeX/HTML tables (`render`) and matplotlib figures (`plots`). No TensorFlow."""
