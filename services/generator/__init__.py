"""The staged portrait pipeline: txt2img + pose, detailer, beautify, detailer, tiled upscale."""
