from django.core.management.base import BaseCommand

from alerts.listener import alert_listener_build


class Command(BaseCommand):
    help = (
        "Listen for webhook alerts on a local port and print each one, with its signature checked "
        "and repeated delivery ids marked. Point a webhook channel at http://HOST:PORT/ with the same secret."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765)
        parser.add_argument("--secret", required=True, help="The channel's secret.")

    def handle(self, *args, host, port, secret, **options):
        def write(line: str) -> None:
            self.stdout.write(line)
            self.stdout.flush()

        server = alert_listener_build(host=host, port=port, secret=secret, write=write)
        write(f"listening on http://{host}:{server.server_address[1]}/ (Ctrl-C to stop)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
