mod decoder;
mod encoder;
