"""The paper's experiments (Tables I-III, Figures 1-3) as data, and the report writer."""
