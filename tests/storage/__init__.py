"""What the library stores: its tables and schema, and the run history kept in them."""
