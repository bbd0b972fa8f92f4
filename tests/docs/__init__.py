"""The docs stay true: their code lives in examples/, their settings tables are current."""
