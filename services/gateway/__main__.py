from shared.cli import app

app(["gateway"])
