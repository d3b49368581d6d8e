"""Users: registration, profiles, credentials. Owns the users database."""
