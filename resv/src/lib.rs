//! Wound/wait mutexes and reservation objects (`dma_resv`), checked against the fence
//! signalling contract. Work in progress: see the `resv` issue.
