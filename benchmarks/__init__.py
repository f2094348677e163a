"""`make bench`: throughput, latency and memory of the pipeline against its raw limits.

Every ratio compares our code path with the raw mechanism underneath it (line protocol
written straight to /write, the CSV query parsed straight into Arrow, the bare codecs), both
measured in the same run on the same data, so a noisy shared machine moves both sides.
"""
