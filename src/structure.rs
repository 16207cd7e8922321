//! Contours and regions of interest, free of DICOM: what an RT Structure Set describes.
