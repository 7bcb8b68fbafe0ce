"""The run database: what the ServerApp records (`rundb.writer`) and the summary, the progress poller and the
dashboard read (`rundb.reader`). SQLite file or any SQLAlchemy URL (PostgreSQL for a lab server)."""
