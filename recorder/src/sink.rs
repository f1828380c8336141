//! Where records go: the trace writer, or a vector in tests.

use traces::Record;

pub trait RecordSink {
    fn append(&mut self, record: &Record) -> Result<(), traces::Error>;
}

impl<W: std::io::Write> RecordSink for traces::Writer<W> {
    fn append(&mut self, record: &Record) -> Result<(), traces::Error> {
        traces::Writer::append(self, record)
    }
}

impl RecordSink for Vec<Record> {
    fn append(&mut self, record: &Record) -> Result<(), traces::Error> {
        self.push(record.clone());
        Ok(())
    }
}
