"""The simulated venue: a broker that fills from the bars the engine sees, seeded synthetic bars, and bars
read from CSV or Parquet files."""
