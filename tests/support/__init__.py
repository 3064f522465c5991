"""What the end-to-end tests and the soak runs share, one module per job.

- :mod:`~tests.support.twistd`: start ``twistd -n chatlog`` on loopback and wait on its own log.
- :mod:`~tests.support.logfile`: read the server's message log as bytes, independently of chatlog.
- :mod:`~tests.support.clients`: one blocking line client, and plain-socket odds and ends.
- :mod:`~tests.support.load`: closed-loop pipelined load and floods, from threads.
- :mod:`~tests.support.connections`: thousands of connections opened, pinged and closed at once.
- :mod:`~tests.support.process`: processes as ``/proc`` shows them, and this process's file limit.
- :mod:`~tests.support.waiting`: wait for a condition, with a deadline.
- :mod:`~tests.support.stats`: percentiles of measured round trips.
- :mod:`~tests.support.certs`: a throwaway self-signed certificate for ``ssl:`` endpoints.
- :mod:`~tests.support.delayproxy`: a proxy that holds replies a known time.
- :mod:`~tests.support.syscalls`: a running server's system calls, watched with strace.
- :mod:`~tests.support.tear`: kill -9 a server inside a log write (ptrace), for a real torn line.
- :mod:`~tests.support.strace`: a server run under strace, its system calls made to fail.
- :mod:`~tests.support.powercut_fs`: a FUSE filesystem that forgets what was not synced.
- :mod:`~tests.support.fleet`: chatlog nodes, HAProxy and rsyslog (RELP) run as a fleet.
"""
