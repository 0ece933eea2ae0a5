"""What an operator needs to deploy concilia, and ``make cluster``, its rehearsal on loopback."""
