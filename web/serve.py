#!/usr/bin/env python3
"""Serves the demo page (web/dist) the way its threaded CPU path needs: with the two
cross-origin-isolation headers (COOP same-origin, COEP require-corp) that make browsers
offer SharedArrayBuffer, and hence wasm threads. Without them the page still works,
single-threaded.

    python3 web/serve.py [--port 8000] [--dir web/dist] [--no-isolation]
"""
import argparse
import functools
import http.server
from pathlib import Path


class Handler(http.server.SimpleHTTPRequestHandler):
    isolate = True
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      '.wasm': 'application/wasm', '.js': 'text/javascript',
                      '.mjs': 'text/javascript', '.onnx': 'application/octet-stream',
                      '.efq': 'application/octet-stream'}

    def end_headers(self):
        if self.isolate:
            self.send_header('Cross-Origin-Opener-Policy', 'same-origin')
            self.send_header('Cross-Origin-Embedder-Policy', 'require-corp')
        super().end_headers()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--port', type=int, default=8000)
    ap.add_argument('--bind', default='127.0.0.1')
    ap.add_argument('--dir', default=str(Path(__file__).resolve().parent / 'dist'))
    ap.add_argument('--no-isolation', action='store_true', help='omit COOP/COEP (single-threaded page)')
    a = ap.parse_args()
    if not (Path(a.dir) / 'index.html').is_file():
        raise SystemExit(f'{a.dir}/index.html not found: build the page first (bash web/build.sh)')
    Handler.isolate = not a.no_isolation
    handler = functools.partial(Handler, directory=a.dir)
    with http.server.ThreadingHTTPServer((a.bind, a.port), handler) as httpd:
        mode = 'cross-origin isolated' if Handler.isolate else 'not isolated'
        print(f'serving {a.dir} on http://{a.bind}:{a.port}/ ({mode})', flush=True)
        httpd.serve_forever()


if __name__ == '__main__':
    main()
