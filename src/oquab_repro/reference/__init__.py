"""The thesis' published numbers (``thesis_numbers.yaml``), the one place
the report compares against."""
