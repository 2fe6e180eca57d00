"""Who is calling: access tokens and the users who may log in."""
