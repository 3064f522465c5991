"""What the protocol makes of a read's bytes: its complete lines, as pure functions.

Two ways lead from a read to staged messages, and they give the same records
and replies for every input (the property tests hold them to it):

- the *line path*: ``bytes.split`` into a list, then each line is looked at
  (the protocol's ``_stage``: a trailing ``\\r`` dropped, the --max-line limit);
- the *whole-read lane* (:func:`whole`): when no line of a read needs a
  look, its complete lines stay one piece, from which the formats make
  the records and the replies with ``bytes.replace``.  ``bytes.split`` and
  ``bytes.count`` test every byte in a loop of their own, while
  ``replace`` finds newlines with ``memchr``: at 1 KiB lines the split
  alone cost more than the records and replies together.

The protocol (:mod:`chatlog.server.protocol`) applies them; limits and timing
stay there.
"""

from __future__ import annotations

from chatlog.log import PLAIN_LINES

#: Most lines handled per connection per reactor turn (README: "at most 250
#: lines per turn").  A client that floods thousands of tiny lines in one read
#: has the rest handled in later turns, and is not read meanwhile, so it can
#: neither delay everyone else's replies nor make one read a huge backlog.
LINES_PER_TURN = 250


def whole(body: bytes, count: int, max_line: int) -> bool:
    """Whether a read's ``count`` complete lines, joined by ``\\n`` in ``body``, may be staged whole.

    That is when no byte of them needs a look of its own (no ``\\r`` to
    drop, nothing to escape: one C pass), none can be over ``max_line``
    (they are no longer than it all together), and they are fewer than
    LINES_PER_TURN (more are a slice now and the rest held back: the line
    path does that).  Their records and replies are then the same as the
    line path's, made from ``body`` as it lies.
    """
    return (
        count < LINES_PER_TURN and len(body) <= max_line and not body.translate(None, PLAIN_LINES)
    )


def too_long(unfinished: bytes, max_line: int) -> bool:
    """Whether an unfinished line is already over ``max_line`` (its ``\\r`` may end it)."""
    over = len(unfinished) - max_line
    return over > 1 or (over == 1 and unfinished[-1:] != b"\r")
