"""The paper's conditions, theorems and bounds as sympy expressions, symbolic checks and numeric predictions
(spec/theory.md §6–7). Not built yet: see the project's open issue "Theory module"."""
