"""Credit assignment estimators: CreditBatch -> per-turn and per-token advantages (design/CREDIT.md)."""
