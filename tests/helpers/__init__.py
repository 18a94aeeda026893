"""What the tests share instead of data on disk: they make their own small images and servers.

    synthetic  small generated chest-X-ray-like class folders (make_dataset, xray_like) with Kermany's file
               names, so a tiny network learns them in an epoch or two and patient grouping is exercised
    corpus     a generated corpus of good and bad files (make_corpus; chest_like, DICOMs with planted
               identifiers PHI / PHI_UIDS that must never leave xraycore.io.read_xray), each with its expected
               outcome
    orthanc    a real PACS: Debian's Orthanc on free loopback ports with a temporary configuration and storage
               (start_orthanc), loaded and read back through its REST API

Helpers, not tests: nothing here is collected by pytest. The shared fixtures (the audit log, generated datasets,
a tiny trained run) are in tests/conftest.py.
"""
