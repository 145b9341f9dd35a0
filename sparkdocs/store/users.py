"""Users of team mode (password mode; the logic is in auth.py): names, Argon2id hashes and a
login generation that ends every login at once."""

from __future__ import annotations

import time
import uuid

from .database import Database


class UserRows(Database):
    def add_user(self, name: str, password_hash: str) -> bool:
        """False when the name is taken."""
        with self._write() as db:
            return db.execute("INSERT OR IGNORE INTO users (name, password_hash, created_at) "
                              "VALUES (?, ?, ?)", (name, password_hash, time.time())).rowcount == 1

    def remove_user(self, name: str) -> bool:
        with self._write() as db:
            return db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 1

    def user_names(self) -> list[str]:
        return [row[0] for row in self._read("SELECT name FROM users ORDER BY name")]

    def user_hash(self, name: str) -> str | None:
        rows = self._read("SELECT password_hash FROM users WHERE name = ?", (name,))
        return rows[0][0] if rows else None

    def login_generation(self, name: str) -> str:
        """Changes each time the user logs out (`end_logins`): signed into their login cookies,
        so a logout ends every copy of them. Empty until the first logout."""
        rows = self._read("SELECT value FROM meta WHERE key = ?", (f"logins:{name}",))
        return rows[0][0] if rows else ""

    def end_logins(self, name: str) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                       (f"logins:{name}", uuid.uuid4().hex))
