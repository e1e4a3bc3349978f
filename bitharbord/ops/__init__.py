"""Operations beside reconciliation: export and import of the library."""
