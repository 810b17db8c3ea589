"""The run folder and the processes that work on it: where every artifact lives and its manifest
(``layout``), the device (``devices``), and the process group under ``torchrun`` with its shards of a
split (``processes``)."""
