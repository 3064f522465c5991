"""twistd plugin registration for chatlog: ``twistd chatlog``.

Only a name and a module path: twistd imports ``chatlog.server.tap`` when the
subcommand is used, so a broken install can never break twistd itself.
"""

from twisted.application.service import ServiceMaker

chatlog = ServiceMaker(
    "chatlog",
    "chatlog.server.tap",
    "A line server that answers and logs every message.",
    "chatlog",
)
