"""Real storage failures on demand: a trigger that makes every INSERT into a table fail."""

from __future__ import annotations

from sqlalchemy import Engine, text


def break_inserts(engine: Engine, table: str, message: str) -> None:
    if engine.dialect.name == "sqlite":
        ddl = [f"CREATE TRIGGER fail_{table} BEFORE INSERT ON {table} "
               f"BEGIN SELECT RAISE(ABORT, '{message}'); END"]
    else:
        ddl = [f"CREATE FUNCTION fail_{table}() RETURNS trigger AS "
               f"$$ BEGIN RAISE EXCEPTION '{message}'; END $$ LANGUAGE plpgsql",
               f"CREATE TRIGGER fail_{table} BEFORE INSERT ON {table} "
               f"FOR EACH ROW EXECUTE FUNCTION fail_{table}()"]
    with engine.begin() as conn:
        for stmt in ddl:
            conn.execute(text(stmt))


def mend_inserts(engine: Engine, table: str) -> None:
    on = "" if engine.dialect.name == "sqlite" else f" ON {table}"
    with engine.begin() as conn:
        conn.execute(text(f"DROP TRIGGER fail_{table}{on}"))
