"""Who is calling: users and their passwords, sessions (access and refresh
tokens), API keys, and the cached identities requests are checked against."""
