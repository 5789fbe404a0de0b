"""boto 2's ``RequestLogger`` (boto/requestlog.py, boto 2.49.0), ported to Python 3.

The baseline ``csv_writer.py`` measures boto-prom's CSV writer against. The port changes only
what Python 3 needs (``import Queue`` -> ``import queue as Queue``); every defect is kept on
purpose, since they are what is being compared:

- the caller formats the line, then ``put``\\ s it on a 100-slot queue and blocks once 100 rows
  wait for the writer;
- the worker writes and flushes one row at a time, and is not a daemon thread (a program
  using it never exits on its own);
- the file is opened with ``'w'``, truncating the previous run's rows;
- ``response`` None (no HTTP response) or a request without ``Action`` (REST and JSON
  services) raise inside boto's call path.
"""

import queue as Queue
import sys
from datetime import datetime
from threading import Thread

from boto.compat import long_type
from boto.utils import RequestHook


class RequestLogger(RequestHook):
    """
    This class implements a request logger that uses a single thread to
    write to a log file.
    """
    def __init__(self, filename='/tmp/request_log.csv'):
        self.request_log_file = open(filename, 'w')
        self.request_log_queue = Queue.Queue(100)
        Thread(target=self._request_log_worker).start()

    def handle_request_data(self, request, response, error=False):
        len = 0 if error else response.getheader('Content-Length')
        now = datetime.now()
        time = now.strftime('%Y-%m-%d %H:%M:%S')
        td = (now - request.start_time)
        duration = (td.microseconds + long_type(td.seconds + td.days * 24 * 3600) * 1e6) / 1e6

        # write output including timestamp, status code, response time, response size, request action
        self.request_log_queue.put("'%s', '%s', '%s', '%s', '%s'\n" % (time, response.status, duration, len, request.params['Action']))

    def _request_log_worker(self):
        while True:
            try:
                item = self.request_log_queue.get(True)
                self.request_log_file.write(item)
                self.request_log_file.flush()
                self.request_log_queue.task_done()
            except:
                import traceback
                traceback.print_exc(file=sys.stdout)
