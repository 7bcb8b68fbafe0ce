"""The run database (a SQLite file or PostgreSQL): its schema and migrations, the writer the study runner uses
(`rundb.writer`), every read (`rundb.queries`, through `rundb.reader.open_readonly`, which never migrates), the
dashboard's read-only role (`rundb.access`) and the test seeder (`rundb.seed`)."""
