"""The command line: parse flags, call the library, render, exit. No logic lives here."""
