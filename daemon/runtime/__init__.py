"""The process: settings, supervision, embedded services, sdnotify, logs, the
runtime file and the local admin token; nothing here knows HTTP, the CLI or SQL."""
