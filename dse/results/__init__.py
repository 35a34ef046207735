"""Result tables and files: Parquet/CSV I/O (the only pyarrow importer), design tables, Pareto fronts, plots."""
